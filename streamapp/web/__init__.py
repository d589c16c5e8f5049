"""The web API every worker serves: views, the live page, auth, peer forwarding."""
