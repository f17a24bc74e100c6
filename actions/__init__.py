"""The action server: form validation, menus and replies that need the backend."""
