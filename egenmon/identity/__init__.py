"""Identity: sign-in through the region's OpenID provider (discovery and keys in
`provider`, the relying party's flow in `oidc`) and egenmon's own SMART on FHIR
authorization server (`smart`, `clients`)."""
