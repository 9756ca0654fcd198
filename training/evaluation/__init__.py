"""Evaluation: evaluator classifiers per dataset and the quality metrics computed in their feature space."""
