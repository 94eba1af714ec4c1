import inspect


def docstring_block(obj, start="Backward", stop=None):
    """Print the block of obj's docstring that starts at the line beginning with `start`:
    up to the line beginning with `stop`, or else to the end of the indented code after it."""
    lines = inspect.getdoc(obj).splitlines()
    i = next(k for k, line in enumerate(lines) if line.lstrip().startswith(start))
    out, seen_code = [lines[i]], False
    for line in lines[i + 1:]:
        if stop is not None:
            if line.lstrip().startswith(stop):
                break
        elif line.startswith("    "):
            seen_code = True
        elif line.strip() and seen_code:
            break
        out.append(line)
    print(f"{obj.__module__}.{obj.__qualname__}:\n" + "\n".join(out).rstrip())
