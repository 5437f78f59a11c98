"""The pipeline's stages, one module each; `run(pipe, h)` computes a stage's artifacts into the run folder and
returns the extra fields of its manifest entry (`h`: the stage's inputs hash)."""
