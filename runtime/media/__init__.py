"""The media path: μ-law codec, resampling, pacing, voice activity, stream protocols."""
