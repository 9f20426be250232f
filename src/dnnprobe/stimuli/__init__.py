"""The stimulus set: the .stim.csv table, image checks, the demo set, BOLD5000 and its download."""
