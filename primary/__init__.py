"""The primary side of an authority: today the digest collector that receives worker reports."""
