"""Log backends behind one interface: `embedded` (SQLite) and `kafka`."""
