"""Input media: fetching, checking and storing the files that jobs take as inputs."""
