"""Training: a framework-free loop, the global-batch all-gather, and the Ray Train driver."""
