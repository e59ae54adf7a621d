"""Gmail sender: SMTP with XOAUTH2 to Google, inside Gmail's limits."""
