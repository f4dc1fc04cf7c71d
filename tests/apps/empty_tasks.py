tasks: list = []
