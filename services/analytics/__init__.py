"""Analytics: delivery and bounce summaries per template, campaign, user and channel, and a live feed."""
