"""Helpers for the RL music recommender notebooks: one module per step of the chain.

data -> vae -> clustering -> listeners -> rewards -> env / ppo / evaluation -> recommend
-> spotify / feedback / play; plots draws and exports figures; pipeline runs the notebooks.
"""
