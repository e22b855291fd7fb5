"""What pages compute about a result: fidelity against dense, comparisons, dilution,
spectra, router fitting and each mechanism's own page analyses. Imports core and mechanisms."""
