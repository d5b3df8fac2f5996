"""The simulator's fidelity suite: do the simulated users behave like the real ones where the logs can tell?

- :mod:`.alignment` — preference alignment (real next movies among random ones) beside trivial and
  collaborative baselines;
- :mod:`.behaviour` — rating histograms and behaviour statistics (items per session, sessions per user, genre
  shares, popularity, off-taste picks) real vs simulated, as distances, and the replay check of a policy;
- :mod:`.suite` — all of it for one world and a few policies: :func:`~.suite.run_fidelity`, the
  ``recsim-personas fidelity`` command, and the summary the gap report carries.

The rating fidelity of a rater alone (RMSE, W1 of the distributions) is :mod:`recsim_personas.agents.fidelity`.
"""
