"""Training room: synthetic damage, data with references, losses, the trainer and calibration."""
