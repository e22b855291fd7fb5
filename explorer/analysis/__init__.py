"""What pages compute about a result: fidelity against dense, comparisons, dilution (prefix curves,
the planted needle and its theory, real text in needle_text), the remedies for dilution, the
attention-sink measure, spectra, router fitting and each mechanism's own page analyses. Imports
core and mechanisms."""
