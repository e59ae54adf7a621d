"""SMTP sender: custom, team, on-premises Exchange and legacy servers over SMTP AUTH."""
