"""The enterprises service: SMEs, their quality-tier qualifications, and their inbox."""
