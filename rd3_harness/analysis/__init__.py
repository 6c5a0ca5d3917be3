"""Analyses over the results store: ablation between protocols, leaderboards, figures, and the
reviewer's check of an exported record."""
