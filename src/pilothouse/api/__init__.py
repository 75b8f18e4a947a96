"""What every HTTP API route shares: error rendering, middleware, field types, pagination."""
