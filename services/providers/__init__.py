"""The providers service: agencies, their credit ratings and listings, and recommendations."""
