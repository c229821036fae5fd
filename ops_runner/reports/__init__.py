"""Pages people read: rendered notebooks, charts and the runs index."""
