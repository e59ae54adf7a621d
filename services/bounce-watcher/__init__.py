"""Bounce watcher: finds bounces in the senders' own inboxes over IMAP."""
