"""The HTTP plumbing every gateway feature shares: API keys and scopes (`auth`), RFC 9457
problem documents and their handlers (`problems`, `views`), the operations routes
(`operations`) and the AsyncAPI document (`asyncapi`)."""
