"""Data files: where they live, how they are fetched and verified, how MedMNIST's layout is read."""
