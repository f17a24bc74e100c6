"""Custom NLU components of this project, referenced from config.yml."""
