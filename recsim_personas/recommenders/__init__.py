"""Recommender policies, the RecBole adapter and the offline-vs-simulated gap report (planned)."""
