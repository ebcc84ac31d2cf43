"""operator: what `roost admin` does against the database, and the stored federation policy."""
