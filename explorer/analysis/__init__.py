"""What pages compute about a result: fidelity against dense, comparisons, dilution (prefix curves,
the planted needle and its theory, real text in needle_text), the remedies for dilution, the
attention-sink measure, spectra, router fitting, the model view (every layer x head at a glance),
the model's own windows (the attention each forward pass computed; how much restarting positions
shape a map) and each mechanism's own page analyses. Imports core and mechanisms."""
