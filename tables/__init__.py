"""Faust table definitions and the versioned state records they hold."""
