"""Recomputes ModelServing and ModelBooster status."""
