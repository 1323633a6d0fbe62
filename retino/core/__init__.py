"""The bottom stage: what every other stage shares and nothing above it defines — errors, atomic
files and locks, the grades, the names of tags and files, and the roles of config keys."""
