"""Pages by person and task; each module a handful of routes that read a form, call a client, render a
template under templates/<module>/."""
