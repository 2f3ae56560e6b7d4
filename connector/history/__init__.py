"""History (SPEC 8): snapshots of the records as they were, and what is computed from them."""
