"""Exchange Online sender: SMTP with XOAUTH2 to Microsoft 365, inside its limits."""
