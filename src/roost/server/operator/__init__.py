"""operator: what `roost admin` does against the database, through the other modules' interfaces."""
