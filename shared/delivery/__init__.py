"""The sending loop every sender runs; each sender supplies only its channel's policy."""
