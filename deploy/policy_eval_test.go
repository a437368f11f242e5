package deploy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	celtypes "github.com/google/cel-go/common/types"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
)

// This file evaluates a ValidatingAdmissionPolicy the way the API server's
// ValidatingAdmissionPolicy plugin does (k8s.io/apiserver v0.37.2,
// pkg/admission/plugin/policy/validating: compilePolicy and validator.Validate),
// with the same CEL compiler, environment, variable composition, object
// conversion and cost budgets, minus the informers and the dispatcher. The
// plugin's own packages cannot be imported without adding modules to go.mod.

// Environments to compile in:
//   - oldestServerEnv: what the oldest supported API server (1.34, whose
//     minimum compatibility version is 1.33) accepts in a new policy. A
//     library introduced later (ext.Lists v3, library.Lists v1...) fails here.
//   - currentEnv: what a 1.37 API server runs stored policies with.
var (
	oldestServerEnv = environment.MustBaseEnvSet(version.MajorMinor(1, 33))
	currentEnv      = environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
)

type celExpr struct {
	expression string
	returns    []*cel.Type
}

func (e *celExpr) GetExpression() string    { return e.expression }
func (e *celExpr) ReturnTypes() []*cel.Type { return e.returns }

type namedCELExpr struct {
	celExpr
	name string
}

func (e *namedCELExpr) GetName() string { return e.name }

// compiledPolicy is a ValidatingAdmissionPolicy ready to evaluate.
type compiledPolicy struct {
	policy     *admissionregistrationv1.ValidatingAdmissionPolicy
	match      plugincel.ConditionEvaluator
	validation plugincel.ConditionEvaluator
	messages   plugincel.ConditionEvaluator
}

// compilePolicy compiles every expression of p (variables, matchConditions,
// validations, messageExpressions) and returns the compilation errors.
func compilePolicy(p *admissionregistrationv1.ValidatingAdmissionPolicy, envSet *environment.EnvSet, mode environment.Type) (*compiledPolicy, []error) {
	var errs []error
	compiler, err := plugincel.NewCompositedCompiler(envSet)
	if err != nil {
		return nil, []error{err}
	}
	// As the API server does: the authorizer is declared for everything
	// but messageExpressions, params only with a paramKind.
	opts := plugincel.OptionalVariableDeclarations{HasParams: p.Spec.ParamKind != nil, HasAuthorizer: true}
	msgOpts := plugincel.OptionalVariableDeclarations{HasParams: p.Spec.ParamKind != nil}
	for _, v := range p.Spec.Variables {
		res := compiler.CompileAndStoreVariable(&namedCELExpr{celExpr{v.Expression, []*cel.Type{cel.AnyType}}, v.Name}, opts, mode)
		if res.Error != nil {
			errs = append(errs, fmt.Errorf("variables[%s]: %w", v.Name, res.Error))
		}
	}
	var match, validations, messages []plugincel.ExpressionAccessor
	for _, m := range p.Spec.MatchConditions {
		match = append(match, &celExpr{m.Expression, []*cel.Type{cel.BoolType}})
	}
	for _, v := range p.Spec.Validations {
		validations = append(validations, &celExpr{v.Expression, []*cel.Type{cel.BoolType}})
		if v.MessageExpression != "" {
			messages = append(messages, &celExpr{v.MessageExpression, []*cel.Type{cel.StringType}})
		} else {
			messages = append(messages, nil)
		}
	}
	cp := &compiledPolicy{
		policy:     p,
		match:      compiler.CompileCondition(match, opts, mode),
		validation: compiler.CompileCondition(validations, opts, mode),
		messages:   compiler.CompileCondition(nonNil(messages), msgOpts, mode),
	}
	for what, ev := range map[string]plugincel.ConditionEvaluator{"matchConditions": cp.match, "validations": cp.validation, "messageExpressions": cp.messages} {
		for _, err := range ev.CompilationErrors() {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	return cp, errs
}

// nonNil keeps CompileCondition from seeing nil accessors; the message of
// validation i is then found by expression text (see decide).
func nonNil(in []plugincel.ExpressionAccessor) []plugincel.ExpressionAccessor {
	var out []plugincel.ExpressionAccessor
	for _, e := range in {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// request is one admission request to evaluate a policy against.
type request struct {
	operation admission.Operation
	gvk       schema.GroupVersionKind
	gvr       schema.GroupVersionResource
	namespace string
	name      string
	object    runtime.Object
	oldObject runtime.Object
	user      user.Info
}

// decision is the outcome of a policy for one request.
type decision struct {
	matched bool   // the matchConditions all held (matchConstraints are checked separately)
	denied  bool   // a validation failed or an expression failed (failurePolicy Fail)
	message string // the first denial's message, as the API server would return it after its prefix
}

// evaluate runs the matchConditions, then the validations and their
// messages, and decides like validator.Validate and the dispatcher: the first
// denied validation's message wins.
func (cp *compiledPolicy) evaluate(t testing.TB, r request) decision {
	t.Helper()
	ctx := context.Background()
	attr := admission.NewAttributesRecord(r.object, r.oldObject, r.gvk, r.namespace, r.name, r.gvr, "", r.operation, nil, false, r.user)
	versioned := func() *admission.VersionedAttributes {
		va := &admission.VersionedAttributes{Attributes: attr, VersionedKind: r.gvk}
		if r.object != nil {
			va.VersionedObject.Set(r.object)
		}
		if r.oldObject != nil {
			va.VersionedOldObject.Set(r.oldObject)
		}
		return va
	}
	req := plugincel.CreateAdmissionRequest(attr, metav1.GroupVersionResource(r.gvr), metav1.GroupVersionKind(r.gvk))
	fail := func(err error) decision {
		if cp.policy.Spec.FailurePolicy != nil && *cp.policy.Spec.FailurePolicy == admissionregistrationv1.Ignore {
			return decision{matched: true}
		}
		return decision{matched: true, denied: true, message: err.Error()}
	}

	if len(cp.policy.Spec.MatchConditions) > 0 {
		results, _, err := cp.match.ForInput(ctx, versioned(), req, plugincel.OptionalVariableBindings{}, nil, celconfig.RuntimeCELCostBudgetMatchConditions)
		if err != nil {
			return fail(err)
		}
		for _, res := range results {
			if res.Error != nil {
				return fail(res.Error)
			}
			if res.EvalResult != celtypes.True {
				return decision{}
			}
		}
	}

	results, remaining, err := cp.validation.ForInput(ctx, versioned(), req, plugincel.OptionalVariableBindings{}, nil, celconfig.RuntimeCELCostBudget)
	if err != nil {
		return fail(err)
	}
	msgResults, _, msgErr := cp.messages.ForInput(ctx, versioned(), req, plugincel.OptionalVariableBindings{}, nil, remaining)
	msgByExpr := map[string]plugincel.EvaluationResult{}
	for _, m := range msgResults {
		msgByExpr[m.ExpressionAccessor.GetExpression()] = m
	}
	for i, res := range results {
		v := cp.policy.Spec.Validations[i]
		if res.Error != nil {
			return fail(res.Error)
		}
		if res.EvalResult == celtypes.True {
			continue
		}
		// The message: messageExpression if it evaluated to a usable
		// string, else message, else the expression.
		var msg string
		if m, ok := msgByExpr[v.MessageExpression]; ok && v.MessageExpression != "" && msgErr == nil && m.Error == nil && m.EvalResult != nil {
			if s, ok := m.EvalResult.Value().(string); ok {
				s = strings.TrimSpace(s)
				if len(s) <= celconfig.MaxEvaluatedMessageExpressionSizeBytes && !strings.Contains(s, "\n") {
					msg = s
				}
			}
		}
		if msg == "" {
			msg = strings.TrimSpace(v.Message)
		}
		if msg == "" {
			msg = "failed expression: " + strings.TrimSpace(v.Expression)
		}
		return decision{matched: true, denied: true, message: msg}
	}
	return decision{matched: true}
}

// matchesRules reports whether the policy's matchConstraints select a
// request for resource (in the resource.k8s.io/v1 API, or any version when
// the rules say "*") and operation. Only the fields these policies use are
// understood; anything else fails the test.
func matchesRules(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy, group, version, resource string, op admissionregistrationv1.OperationType) bool {
	t.Helper()
	mc := p.Spec.MatchConstraints
	if mc == nil {
		t.Fatalf("%s: no matchConstraints", p.Name)
	}
	if mc.NamespaceSelector != nil && len(mc.NamespaceSelector.MatchLabels)+len(mc.NamespaceSelector.MatchExpressions) > 0 ||
		mc.ObjectSelector != nil && len(mc.ObjectSelector.MatchLabels)+len(mc.ObjectSelector.MatchExpressions) > 0 ||
		len(mc.ExcludeResourceRules) > 0 {
		t.Fatalf("%s: selectors or excludeResourceRules are not understood by this test", p.Name)
	}
	in := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	for _, r := range mc.ResourceRules {
		if r.Scope != nil && *r.Scope != admissionregistrationv1.AllScopes {
			t.Fatalf("%s: scoped rules are not understood by this test", p.Name)
		}
		ops := make([]string, len(r.Operations))
		for i, o := range r.Operations {
			ops[i] = string(o)
		}
		if in(r.APIGroups, group) && in(r.APIVersions, version) && in(r.Resources, resource) && in(ops, string(op)) {
			return true
		}
	}
	return false
}
