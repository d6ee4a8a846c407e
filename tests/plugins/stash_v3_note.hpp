// Listed in stash v3's STATE_HEADERS only: a different definition hash, same schema.
