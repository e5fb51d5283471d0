"""What operators do with the log: replay, rebuild, re-drive, stats, export."""
