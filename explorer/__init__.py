"""Gradio KV-cache explorer: sessions, views and the app built on the backend."""
