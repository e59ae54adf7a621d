"""The channel registry: connections, identities, assignments and tenant settings."""
