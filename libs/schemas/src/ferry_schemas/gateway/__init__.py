"""Gateway API and Inference Extension: compiled objects and the attachment rules Ferry applies."""
