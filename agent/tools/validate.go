package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// checkArguments makes every tool's input schema plain (no ["null", T] types, which strict
// clients warn about) and wraps its handler so that arguments that do not fit the schema get
// one readable line naming the argument and showing an example, instead of a validator's
// internal dump. It runs once, after every tool is added. A schema that does not decode is a
// programming error (TestToolsListed fails on it): logged, and that tool is left unwrapped.
// It also turns each output schema into raw JSON once (see rawOutputSchema).
func checkArguments(s *server.MCPServer, log *slog.Logger) {
	for _, st := range s.ListTools() {
		schema, err := plainSchema(st.Tool.RawInputSchema)
		var b []byte
		if err == nil {
			b, err = json.Marshal(schema)
		}
		var resolved *jsonschema.Resolved
		if err == nil {
			resolved, err = schema.Resolve(nil)
		}
		if err != nil {
			log.Error("tool input schema unusable: arguments are not checked", "tool", st.Tool.Name, "err", err)
			continue
		}
		st.Tool.RawInputSchema = b
		st.Tool = rawOutputSchema(st.Tool)
		next := st.Handler
		st.Handler = func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if msg := argumentProblem(schema, resolved, req.Params.Arguments); msg != "" {
				return errResult("invalid arguments: " + msg), nil
			}
			return next(ctx, req)
		}
		s.AddTools(*st)
	}
}

// rawOutputSchema returns t with its output schema as raw JSON, the same bytes on the wire:
// mcp-go's output validation (WithOutputSchemaValidation) would otherwise marshal the struct
// form again on every call (about 35 µs of a run_command here).
func rawOutputSchema(t mcp.Tool) mcp.Tool {
	if t.OutputSchema.Type == "" || t.RawOutputSchema != nil {
		return t
	}
	if b, err := json.Marshal(t.OutputSchema); err == nil {
		t.RawOutputSchema, t.OutputSchema = b, mcp.ToolOutputSchema{}
	}
	return t
}

// plainSchema decodes a tool's input schema and turns each property's ["null", T] type into T.
func plainSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	var schema jsonschema.Schema
	if err := json.Unmarshal(raw, &schema); err != nil {
		return nil, err
	}
	for _, p := range schema.Properties {
		if len(p.Types) == 2 && slices.Contains(p.Types, "null") {
			p.Type = p.Types[0]
			if p.Type == "null" {
				p.Type = p.Types[1]
			}
			p.Types = nil
		}
	}
	return &schema, nil
}

// argumentProblem says in one line what is wrong with args, or "" when they fit the schema.
// Missing, unknown and mistyped arguments are told with an example; anything deeper falls
// back to the validator's own words.
func argumentProblem(schema *jsonschema.Schema, resolved *jsonschema.Resolved, raw any) string {
	args := map[string]any{}
	switch v := raw.(type) {
	case nil:
	case map[string]any:
		args = v
	default:
		return `the arguments must be a JSON object, e.g. {"edge": "pi"}`
	}
	var problems []string
	for _, name := range schema.Required {
		if _, ok := args[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s is required, e.g. %s", name, example(name, schema.Properties[name])))
		}
	}
	for _, name := range slices.Sorted(mapsKeys(args)) {
		p, known := schema.Properties[name]
		switch {
		case !known:
			problems = append(problems, fmt.Sprintf("%s is not an argument of this tool (it takes %s)",
				oneLine(name), strings.Join(slices.Sorted(mapsKeys(schema.Properties)), ", ")))
		case p.Type != "" && !hasType(args[name], p.Type):
			problems = append(problems, fmt.Sprintf("%s must be %s, not %s, e.g. %s", name, article(p.Type), article(jsonType(args[name])), example(name, p)))
		}
	}
	if len(problems) == 0 {
		if err := resolved.Validate(args); err != nil {
			problems = append(problems, strings.TrimPrefix(oneLine(err.Error()), "validating root: "))
		}
	}
	return strings.Join(problems, "; ")
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// hasType reports whether a decoded JSON value is of the schema type t.
func hasType(v any, t string) bool {
	got := jsonType(v)
	return got == t || t == "number" && got == "integer"
}

// jsonType names a decoded JSON value's type as JSON Schema does.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func article(t string) string {
	if strings.ContainsAny(t[:1], "aeiou") {
		return "an " + t
	}
	return "a " + t
}

// example shows one argument with a value of its type.
func example(name string, p *jsonschema.Schema) string {
	v := `"…"`
	if p != nil {
		switch p.Type {
		case "integer":
			v = "30"
		case "number":
			v = "1.5"
		case "boolean":
			v = "true"
		case "array":
			v = `["uname", "-a"]`
		case "object":
			v = `{"role": "web"}`
		}
	}
	return fmt.Sprintf(`{"%s": %s}`, name, v)
}
