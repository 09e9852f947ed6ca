"""Explanations: Grad-CAM heatmaps and measures of how faithful and focused they are."""
