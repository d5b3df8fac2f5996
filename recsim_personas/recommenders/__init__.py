"""Recommender policies (the RecBole adapter and the offline-vs-simulated gap report are planned)."""

from recsim_personas.recommenders.policies import POLICIES, Policy, PopularPolicy, RandomPolicy, make_policy

__all__ = ["POLICIES", "Policy", "PopularPolicy", "RandomPolicy", "make_policy"]
