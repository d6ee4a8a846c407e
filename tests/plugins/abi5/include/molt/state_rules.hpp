// What a state may hold, checked at compile time, and the fingerprint of its
// layout. Used by StatefulModule: when two versions of a module declare the
// same schema and the same fingerprint, the host hands the live state object
// from one to the other instead of serializing it.
//
// The rules: a state is plain data. Arithmetic types, enums, std::string,
// standard containers, pairs, arrays and optionals of such, std::unique_ptr to
// such, and structs of such with a serialize() member. Not allowed: raw or
// member pointers, std::function, anything polymorphic (a vtable points into
// the image that made the object, which is unloaded after the upgrade), and
// types the checker does not know. The checker walks what serialize() visits,
// so a member serialize() skips is not checked: do not skip members.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/mpl/bool.hpp>

namespace boost::serialization {
template <class T>
struct nvp;
}

namespace molt::api::detail {

template <class T, template <class...> class Template>
struct is_instance : std::false_type {};
template <template <class...> class Template, class... Args>
struct is_instance<Template<Args...>, Template> : std::true_type {};
template <class T, template <class...> class Template>
inline constexpr bool is_instance_v = is_instance<std::remove_cv_t<T>, Template>::value;

template <class T>
inline constexpr bool always_false = false;

template <class T>
struct is_std_array : std::false_type {};
template <class T, std::size_t N>
struct is_std_array<std::array<T, N>> : std::true_type {};

/// An archive that serializes nothing: it only checks the types it is shown.
class StateRulesChecker {
 public:
  using is_saving = boost::mpl::true_;  // lets split_member() pick save()
  using is_loading = boost::mpl::false_;

  template <class T>
  StateRulesChecker& operator&(const T& value) { return visit(value); }
  template <class T>
  StateRulesChecker& operator<<(const T& value) { return visit(value); }
  template <class T>
  StateRulesChecker& operator>>(const T& value) { return visit(value); }

  void save_binary(const void*, std::size_t) {}
  void load_binary(void*, std::size_t) {}

  template <class T>
  StateRulesChecker& visit(const T& value);
};

template <class Hasher>
constexpr void check_functor() {
  static_assert(std::is_empty_v<Hasher> && !std::is_polymorphic_v<Hasher>,
                "molt state: container hashers, comparators and allocators must be stateless "
                "(a stateful one may hold pointers into the module's code)");
}

/// Instantiating this checks `T`; it is never run.
template <class T>
void check_type(StateRulesChecker& checker) {
  using U = std::remove_cv_t<T>;
  static_assert(!std::is_pointer_v<U>, "molt state: no raw pointers (they may point into the module's image)");
  static_assert(!std::is_member_pointer_v<U>, "molt state: no member pointers");
  static_assert(!std::is_reference_v<U>, "molt state: no references");
  static_assert(!std::is_polymorphic_v<U>, "molt state: no polymorphic types: their vtable lives in the module's image");
  static_assert(!is_instance_v<U, std::function>, "molt state: no std::function: it points into the module's code");
  if constexpr (std::is_arithmetic_v<U> || std::is_enum_v<U>) {
  } else if constexpr (std::is_same_v<U, std::string>) {
  } else if constexpr (is_instance_v<U, std::vector> || is_instance_v<U, std::deque> || is_instance_v<U, std::list> ||
                       is_instance_v<U, std::optional>) {
    check_type<typename U::value_type>(checker);
  } else if constexpr (is_instance_v<U, std::set> || is_instance_v<U, std::multiset>) {
    check_functor<typename U::key_compare>();
    check_type<typename U::key_type>(checker);
  } else if constexpr (is_instance_v<U, std::unordered_set> || is_instance_v<U, std::unordered_multiset>) {
    check_functor<typename U::hasher>();
    check_functor<typename U::key_equal>();
    check_type<typename U::key_type>(checker);
  } else if constexpr (is_instance_v<U, std::map> || is_instance_v<U, std::multimap>) {
    check_functor<typename U::key_compare>();
    check_type<typename U::key_type>(checker);
    check_type<typename U::mapped_type>(checker);
  } else if constexpr (is_instance_v<U, std::unordered_map> || is_instance_v<U, std::unordered_multimap>) {
    check_functor<typename U::hasher>();
    check_functor<typename U::key_equal>();
    check_type<typename U::key_type>(checker);
    check_type<typename U::mapped_type>(checker);
  } else if constexpr (is_instance_v<U, std::pair>) {
    check_type<typename U::first_type>(checker);
    check_type<typename U::second_type>(checker);
  } else if constexpr (is_std_array<U>::value) {
    check_type<typename U::value_type>(checker);
  } else if constexpr (is_instance_v<U, std::unique_ptr>) {
    check_type<typename U::element_type>(checker);
  } else if constexpr (is_instance_v<U, boost::serialization::nvp>) {
    check_type<typename U::value_type>(checker);
  } else if constexpr (requires(U& u, StateRulesChecker& c) { u.serialize(c, 0u); }) {
    // A struct: check what its own serialize() visits.
    alignas(U) unsigned char storage[sizeof(U)];
    reinterpret_cast<U&>(storage).serialize(checker, 0u);
  } else {
    static_assert(always_false<U>,
                  "molt state: this member type is not known to be plain data; use arithmetic types, std::string, "
                  "standard containers, or a struct with a serialize() member (see docs/plugin-api.md)");
  }
}

template <class T>
StateRulesChecker& StateRulesChecker::visit(const T&) {
  check_type<T>(*this);
  return *this;
}

constexpr std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 14695981039346656037ull) {
  for (const char c : text) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return hash;
}

template <class T>
constexpr std::string_view type_name() {
  return __PRETTY_FUNCTION__;  // names T: "... [with T = kv::StateV2; ...]"
}

#define MOLT_DETAIL_STRINGIFY2(x) #x
#define MOLT_DETAIL_STRINGIFY(x) MOLT_DETAIL_STRINGIFY2(x)

/// The layout fingerprint of `State`: its type's name, size and alignment,
/// the standard library's version and ABI, and a hash of the headers that
/// define it (MOLT_STATE_DEFINITION_HASH, computed by molt_add_plugin from its
/// STATE_HEADERS). 0 without that hash: such a state is never handed over in
/// memory, only serialized.
template <class State>
constexpr std::uint64_t state_fingerprint() {
#ifdef MOLT_STATE_DEFINITION_HASH
  std::uint64_t hash = fnv1a(type_name<State>());
  hash = fnv1a(MOLT_STATE_DEFINITION_HASH, hash);
  hash = fnv1a(__VERSION__, hash);
  hash = fnv1a(MOLT_DETAIL_STRINGIFY(__GLIBCXX__), hash);
  hash = fnv1a(MOLT_DETAIL_STRINGIFY(_GLIBCXX_USE_CXX11_ABI), hash);
#ifdef _GLIBCXX_DEBUG
  hash = fnv1a("_GLIBCXX_DEBUG", hash);
#endif
  hash = (hash ^ sizeof(State)) * 1099511628211ull;
  hash = (hash ^ alignof(State)) * 1099511628211ull;
  return hash == 0 ? 1 : hash;
#else
  return 0;
#endif
}

}  // namespace molt::api::detail
