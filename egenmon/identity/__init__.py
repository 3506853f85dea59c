"""Sign-in through the region's OpenID provider: discovery and keys (`provider`), the
relying party's flow (`oidc`)."""
