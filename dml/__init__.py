"""dml: deep metric learning for image retrieval."""
