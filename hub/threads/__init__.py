"""Thread stores behind one interface: SQLite and PostgreSQL."""
