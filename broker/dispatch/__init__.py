"""Which agent connection checks which sign-in: sealing, the job, its resending and withdrawal."""
