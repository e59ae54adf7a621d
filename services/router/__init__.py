"""Router: picks each send request's delivery channel."""
