"""The shipped presets: JSON files beside this one, validated against the parameter schema
(vacelive.bridge.presets reads them from here, in a checkout and in an installed wheel alike)."""
