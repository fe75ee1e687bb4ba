"""Pure functions: a custom resource (plus resolved inputs and settings) in, child manifests out."""
